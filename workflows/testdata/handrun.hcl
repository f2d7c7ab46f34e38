# The hand-run CRIU pipeline, as an operator types it over SSH: dump to
# disk, tar, scp, untar, restore. The baseline of BenchmarkMigrate; it has
# no rollback. The service address moves with mig's move_ip step, as in the
# workflows it is compared with.

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

variable "criu" {
  type    = string
  default = "/opt/mig/criu/bin/criu"
}

locals {
  dir = "/var/lib/mig/hand"
  tar = "/var/lib/mig/hand.tar"
  ssh = ["-i", "${var.lab}/id_ed25519", "-o", "UserKnownHostsFile=${var.lab}/known_hosts", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
}

probe "web" {
  http     = "http://${var.service_ip}:${var.service_port}/"
  interval = "5ms"
}

step "exec" "dump" {
  host = host.src
  argv = ["sh", "-c", "mkdir -p \"$DIR\" && exec \"$CRIU\" dump -t \"$(cat \"$PIDFILE\")\" -D \"$DIR\" -o dump.log --tcp-established --skip-in-flight --network-lock nftables"]
  env = {
    CRIU    = var.criu
    DIR     = local.dir
    PIDFILE = var.pidfile
  }
  timeout = "2m"
}

step "exec" "tar" {
  host       = host.src
  argv       = ["tar", "-C", local.dir, "-cf", local.tar, "."]
  depends_on = [step.dump]
}

step "exec" "scp" {
  host       = host.src
  argv       = concat(["scp", "-q"], local.ssh, [local.tar, "root@${split(":", var.target_address)[0]}:${local.tar}"])
  depends_on = [step.tar]
}

step "exec" "untar" {
  host = host.dst
  argv = ["sh", "-c", "mkdir -p \"$DIR\" && tar -C \"$DIR\" -xf \"$TAR\""]
  env = {
    DIR = local.dir
    TAR = local.tar
  }
  depends_on = [step.scp]
}

step "move_ip" "vip" {
  address    = "${var.service_ip}/24"
  from       = host.src
  to         = host.dst
  interface  = "eth0"
  depends_on = [step.dump]
}

step "exec" "restore" {
  host       = host.dst
  argv       = [var.criu, "restore", "-D", local.dir, "-o", "restore.log", "-d", "--tcp-established"]
  depends_on = [step.untar, step.vip]
  timeout    = "2m"
}

# CRIU leaves the source's network locked after a dump that killed it.
step "exec" "unlock" {
  host       = host.src
  argv       = ["sh", "-c", "for t in $(nft list tables | awk '/CRIU-/ {print $3}'); do nft delete table inet \"$t\"; done"]
  depends_on = [step.restore]
}
