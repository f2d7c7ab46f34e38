# live.hcl: the best live strategy the hosts allow. While the process keeps
# running, predump rounds send its memory to a page server on the target,
# each round only the pages dirtied since the last, until the stop policy
# says the rest is small. Then the final dump freezes the process and keeps
# the rest of its memory with the source (post-copy, "lazy"): the target
# restores it at once from the small images, and fetches each page that is
# still missing from the frozen source when the process first touches it.
# Pre-copy plus post-copy ("hybrid") means the pause does not grow with
# memory at all, and few pages cross the network on demand.
#
# Pre-copy needs the kernel's soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY;
# `mig doctor` says whether a host has it). This workflow sets
# unsupported = "skip": on a host without it, the predump step does nothing
# (before freezing anything) and the final dump is a plain lazy one, as in
# lazy.hcl. Set var.precopy_unsupported = "fail" to refuse instead.
#
# Post-copy needs userfaultfd on the target and raised pipe limits on the
# source (`mig doctor -fix`); `mig plan` checks both.
#
# Shared memory (SysV segments and shared anonymous mappings) cannot be
# fetched lazily: CRIU 4.2 serves only private anonymous pages on demand.
# It is written with the small images during the freeze, and the ship step
# below carries it to the target before the restore.
#
# The defaults are those of `mig lab up` and `make demo`.
#
#   mig plan workflows/live.hcl
#   mig apply workflows/live.hcl

variable "lab" {
  type        = string
  default     = "/var/lib/mig-lab/lab"
  description = "Directory where `mig lab up` wrote the SSH identity and known_hosts."
}

variable "source_address" {
  type    = string
  default = "10.77.0.11:22"
}

variable "target_address" {
  type    = string
  default = "10.77.0.12:22"
}

variable "pidfile" {
  type        = string
  default     = "/var/lib/mig-lab/lab/counter.pid"
  description = "Pid file of the process to move, as the source host sees it."
}

variable "service_ip" {
  type        = string
  default     = "10.77.0.100"
  description = "The address clients use; it moves with the process."
}

variable "service_port" {
  type    = number
  default = 8080
}

host "src" {
  ssh {
    address       = var.source_address
    user          = "root"
    identity_file = "${var.lab}/id_ed25519"
    known_hosts   = "${var.lab}/known_hosts"
  }
}

host "dst" {
  ssh {
    address       = var.target_address
    user          = "root"
    identity_file = "${var.lab}/id_ed25519"
    known_hosts   = "${var.lab}/known_hosts"
  }
}

process "web" {
  host            = host.src
  pidfile         = var.pidfile
  tcp_established = true
}

# New connections are held while the workload moves: a request that waits
# is slow, not failed. A failure is an error, or no answer within timeout.
probe "web" {
  http     = "http://${var.service_ip}:${var.service_port}/"
  interval = "5ms"
  timeout  = "5s"
}

variable "load_rate" {
  type        = number
  default     = 1000
  description = "Requests per second of the load that runs while the service moves."
}

# An open-loop load, as the service's clients: most requests over kept
# connections (they ride through the move with tcp_established), a share
# over new ones (they wait at the network lock, then reach the target).
load "web" {
  http            = "http://${var.service_ip}:${var.service_port}/"
  rate            = var.load_rate
  connections     = 8
  new_connections = 0.2
}

variable "precopy_unsupported" {
  type        = string
  default     = "skip"
  description = "What to do on a host that cannot pre-dump: \"skip\" or \"fail\"."
}

variable "max_rounds" {
  type    = number
  default = 8
}

step "predump" "pre" {
  workload    = process.web
  dir         = "/var/lib/mig/images/web"
  to          = host.dst
  max_rounds  = var.max_rounds
  min_pages   = 64
  max_growth  = 0.10
  unsupported = var.precopy_unsupported
  timeout     = "5m"
}

step "dump" "final" {
  workload = process.web
  mode     = "lazy"
  dir      = "${step.pre.dir}/final"
  parent   = step.pre.last_dir
  target   = host.dst
  address  = split(":", var.source_address)[0]
  # The images go to the target as soon as CRIU has written them, over a
  # connection opened before the freeze: no copy step in the pause.
  send_images = true
  timeout     = "2m"
}

# tcp_established needs the service address on the target before restore.
# That is safe because the dump's target guard drops the moved connections'
# packets there until the restore ends (`mig plan` warns when nothing does).
step "move_ip" "vip" {
  address    = "${var.service_ip}/24"
  from       = host.src
  to         = host.dst
  interface  = "eth0"
  depends_on = [step.final]
}

step "restore" "start" {
  workload   = process.web
  host       = host.dst
  dir        = step.final.target_dir
  lazy       = true
  source     = step.final.lazy
  depends_on = [step.vip]
  timeout    = "5m"

  # The timeout also covers the post-copy, which lasts as long as the
  # memory takes to cross; CRIU's restore itself takes milliseconds. One
  # that hangs (on a lock, say) is given up on after criu_timeout and the
  # run rolls back, instead of holding clients for the whole timeout.
  criu_timeout = "30s"
}

step "verify" "up" {
  http {
    url        = "http://${var.service_ip}:${var.service_port}/check"
    status     = 200
    body_regex = "^ok"
  }
  depends_on = [step.start]
  timeout    = "10s"
}
