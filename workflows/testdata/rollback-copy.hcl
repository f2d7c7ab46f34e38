# A cold move whose copy is cut short: the raw images (tens of MiB) get 20ms
# to cross, with no retry. The run must roll back and the source resume.

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

probe "web" {
  http     = "http://${var.service_ip}:${var.service_port}/"
  interval = "5ms"
}

step "dump" "final" {
  workload = process.web
  mode     = "disk"
  dir      = "/var/lib/mig/images/web"
}

step "copy" "ship" {
  from        = host.src
  to          = host.dst
  source      = step.final.dir
  destination = "/var/lib/mig/images/web"
  timeout     = "20ms"
}

step "restore" "start" {
  workload = process.web
  host     = host.dst
  dir      = step.ship.path
}
