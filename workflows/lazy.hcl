# lazy.hcl: post-copy. The dump writes only the small images and keeps the
# source frozen, serving its memory pages. The target restores at once and
# fetches each page when the process first touches it (or in the background),
# so the pause does not grow with the memory size. The source must stay up
# until the last page has arrived; the restore step waits for that.
#
# Needs userfaultfd on the target and raised pipe limits on the source:
# `mig doctor -fix` raises them. The defaults are those of `mig lab up` and
# `make demo`.
#
#   mig plan workflows/lazy.hcl
#   mig apply workflows/lazy.hcl
#
# If any step fails after the freeze and before the restore returns, the run
# rolls back: the address goes back to the source and the source resumes
# where it stopped. Point of no return: once the restore returns, the target
# serves clients with pages only the frozen source has, so mig never resumes
# the source after that, and if the source or the link dies before the last
# page arrives, the workload is lost. With prefetch = true the target fetches
# every page before the restored copy starts: a longer pause (as long as a
# page-server move), and a failure until then still rolls back.

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

variable "prefetch" {
  type        = bool
  default     = false
  description = "Fetch every page before the restored copy starts (no post-copy risk, a longer pause)."
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

step "dump" "final" {
  workload = process.web
  mode     = "lazy"
  # A tmpfs: a lazy dump's images are small (its pages stay with the
  # source), and needed only until the restore. CRIU writes one per TCP
  # connection in the pause, and a disk's file creates would lengthen it.
  dir     = "/run/mig/images/web"
  target  = host.dst
  address = split(":", var.source_address)[0]
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
  prefetch   = var.prefetch
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
