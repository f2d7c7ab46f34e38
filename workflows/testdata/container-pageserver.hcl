# container-pageserver.hcl (test only): container-lazy.hcl with a
# page-server final dump: the pages stream into a page server on the target
# while the container is frozen, the small images follow.

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

step "dump" "final" {
  workload = container.web
  mode     = "page-server"
  dir      = "/run/mig/images/web"
  target   = host.dst
  address  = split(":", var.target_address)[0]
  timeout  = "2m"
}

step "copy" "ship" {
  from        = host.src
  to          = host.dst
  source      = step.final.dir
  destination = step.final.target_dir
  merge       = true
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
  dir        = step.ship.path
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
