# cold.hcl: stop-and-copy. The source is frozen, its images are packed
# into a checksummed archive, copied to the target, checked and restored
# there. The simplest and most robust strategy; the pause lasts the whole
# dump, copy and restore.
#
# The defaults are those of `mig lab up` and `make demo`: the counter runs on
# lab host h1 behind the service address 10.77.0.100, and moves to h2.
#
#   mig plan workflows/cold.hcl
#   mig apply -var pidfile=/var/run/web.pid workflows/cold.hcl
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

# target: the dump guards the target from before the freeze until the
# restore there ends (new connections held, moved ones never reset).
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
  # Only carries the images: the commit removes it.
  temporary = true
}

step "copy" "ship" {
  from        = host.src
  to          = host.dst
  source      = step.pack.path
  destination = "/var/lib/mig/images/web.tar.zst"
  temporary   = true
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
  dir        = step.unpack.path
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
