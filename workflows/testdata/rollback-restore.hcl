# rollback-restore.hcl: cold.hcl, except that the target loses the file
# the process has open (/tmp/counter.log, which the test put on both hosts)
# once the source is frozen, so that the restore fails after preflight
# passed and the run must roll back.

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
  target   = host.dst
  dir      = "/var/lib/mig/images/web"
  timeout  = "2m"
}

step "archive" "pack" {
  host        = host.src
  source      = step.final.dir
  destination = "/var/lib/mig/images/web.tar.zst"
}

step "copy" "ship" {
  from        = host.src
  to          = host.dst
  source      = step.pack.path
  destination = "/var/lib/mig/images/web.tar.zst"
  timeout     = "5m"

  retry {
    attempts = 3
    delay    = "1s"
  }
}

step "unarchive" "unpack" {
  host        = host.dst
  source      = step.ship.path
  destination = "/var/lib/mig/images/web"
}

# tcp_established needs the service address on the target before restore.
step "move_ip" "vip" {
  address    = "${var.service_ip}/24"
  from       = host.src
  to         = host.dst
  interface  = "eth0"
  depends_on = [step.final]
}

step "exec" "lose_log" {
  host       = host.dst
  argv       = ["rm", "-f", "/tmp/counter.log"]
  depends_on = [step.final]
}

step "restore" "start" {
  workload   = process.web
  host       = host.dst
  dir        = step.unpack.path
  depends_on = [step.vip, step.lose_log]
  timeout    = "2m"
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
