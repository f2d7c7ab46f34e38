# pageserver.hcl: the dump streams the memory pages straight into a page
# server on the target while the source is frozen, so nothing large is
# written on the source or copied afterwards. Only the small images (task
# state, file descriptors, sockets) follow in a checksummed copy.
#
# The defaults are those of `mig lab up` and `make demo`: the counter runs on
# lab host h1 behind the service address 10.77.0.100, and moves to h2.
#
#   mig plan workflows/pageserver.hcl
#   mig apply workflows/pageserver.hcl
#
# If any step fails after the freeze, the run rolls back: the address goes
# back to the source and the source resumes where it stopped.

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

step "dump" "final" {
  workload = process.web
  mode     = "page-server"
  dir      = "/var/lib/mig/images/web"
  target   = host.dst
  address  = split(":", var.target_address)[0]
  # The small images join the pages on the target as soon as CRIU has
  # written them, over a connection opened before the freeze: no copy
  # step in the pause.
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
  depends_on = [step.vip]
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
