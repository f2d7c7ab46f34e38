# container-live.hcl: the best live strategy the hosts allow, for a runc
# container. While the container keeps running, predump rounds send its
# memory to a page server on the target, each round only the pages dirtied
# since the last, until the stop policy says the rest is small. Then the
# final dump freezes the container and keeps the rest of its memory with the
# source (post-copy, "lazy"); the small images follow, the target creates the
# container from its bundle and restores it at once, and the pages still
# missing are fetched from the frozen source on first touch.
#
# Pre-copy needs the kernel's soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY;
# `mig doctor` says whether a host has it). This workflow sets
# unsupported = "skip": on a host without it, the predump step does nothing
# (before freezing anything), and the final dump is a plain lazy one, as in
# container-lazy.hcl. Set var.precopy_unsupported = "fail" to refuse instead.
# Shared memory is never fetched lazily (CRIU 4.2 serves only private
# anonymous pages on demand): it travels with the small images.
#
# The defaults are those of `mig lab up` and `make demo-container`: container
# "web" runs cmd/counter on lab host h1 behind the service address
# 10.77.0.100, and moves to h2.
#
#   mig plan workflows/container-live.hcl
#   mig apply workflows/container-live.hcl
#
# Network: the container shares the network of the host it runs on (its
# config.json has no network namespace), so the counter listens on the lab
# host's addresses. Clients use the service address, which move_ip takes
# from the source's eth0 to the target's. tcp_established keeps the clients'
# connections, and needs the address on the target before the restore.
#
# Bundle: the bundle (config.json and a busybox rootfs holding the counter)
# is already on the target, at the same path as on the source: lab hosts see
# the machine's /var/lib/mig-lab. The workflow does not copy it; preflight
# (`mig plan`, `mig doctor`) checks that it is there and that the restore ID
# is free on the target.
#
# If any step fails after the freeze, the run rolls back: the container
# restored on the target (if any) is destroyed, the address goes back to the
# source, and the source container resumes where it stopped. A failure in
# the predump rounds changes nothing: the container never stopped.

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

variable "container_id" {
  type        = string
  default     = "web"
  description = "ID of the running container on the source, under runc's state root /run/runc."
}

variable "restore_id" {
  type        = string
  default     = "web-moved"
  description = "ID of the container on the target. Lab hosts share the machine's cgroupfs, so it must differ from container_id there; on separate machines it may be the same."
}

variable "bundle" {
  type        = string
  default     = "/var/lib/mig-lab/lab/bundles/web"
  description = "The container's bundle (config.json and rootfs), present on the target at this path."
}

variable "service_ip" {
  type        = string
  default     = "10.77.0.100"
  description = "The address clients use; it moves with the container."
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

container "web" {
  host            = host.src
  id              = var.container_id
  bundle          = var.bundle
  restore_id      = var.restore_id
  tcp_established = true
}

# New connections are held while the workload moves: a request that waits
# is slow, not failed. A failure is an error, or no answer within timeout.
probe "web" {
  http     = "http://${var.service_ip}:${var.service_port}/"
  interval = "5ms"
  timeout  = "5s"
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
  workload    = container.web
  dir         = "/var/lib/mig/images/web"
  to          = host.dst
  max_rounds  = var.max_rounds
  min_pages   = 64
  max_growth  = 0.10
  unsupported = var.precopy_unsupported
  timeout     = "5m"
}

step "dump" "final" {
  workload = container.web
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
  workload   = container.web
  host       = host.dst
  dir        = step.final.target_dir
  lazy       = true
  source     = step.final.lazy
  depends_on = [step.vip]
  timeout    = "5m"
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
