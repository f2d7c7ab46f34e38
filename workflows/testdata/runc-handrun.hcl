# The runc CLI pipeline, as an operator types it over SSH: runc checkpoint,
# tar, scp, untar, runc restore. The baseline of BenchmarkMigrateContainer;
# it has no rollback. runc runs CRIU by name, so PATH puts mig's CRIU first;
# the bundle's org.criu.config annotation names a CRIU config file with the
# nftables network lock and skip-in-flight (runc 1.1.5 has no flag for it).
# The service address moves with mig's move_ip step, as in the workflows it
# is compared with.

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

variable "path" {
  type    = string
  default = "/opt/mig/criu/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

locals {
  dir = "/var/lib/mig/runc"
  tar = "/var/lib/mig/runc.tar"
  ssh = ["-i", "${var.lab}/id_ed25519", "-o", "UserKnownHostsFile=${var.lab}/known_hosts", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
}

probe "web" {
  http     = "http://${var.service_ip}:${var.service_port}/"
  interval = "5ms"
}

step "exec" "checkpoint" {
  host    = host.src
  argv    = ["runc", "checkpoint", "--image-path", local.dir, "--tcp-established", "--manage-cgroups-mode", "soft", var.container_id]
  env     = { PATH = var.path }
  timeout = "2m"
}

step "exec" "tar" {
  host       = host.src
  argv       = ["tar", "-C", local.dir, "-cf", local.tar, "."]
  depends_on = [step.checkpoint]
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
  depends_on = [step.checkpoint]
}

# runc hands its own stdio to the restored container in place of its pipes:
# /dev/null here, so that nothing waits on them.
step "exec" "restore" {
  host = host.dst
  argv = ["sh", "-c", "runc restore -d --image-path \"$DIR\" --bundle \"$BUNDLE\" --tcp-established --manage-cgroups-mode soft \"$ID\" </dev/null >/dev/null 2>&1"]
  env = {
    PATH   = var.path
    DIR    = local.dir
    BUNDLE = var.bundle
    ID     = var.restore_id
  }
  depends_on = [step.untar, step.vip]
  timeout    = "2m"
}

# CRIU leaves the source's network locked after a checkpoint that killed it.
step "exec" "unlock" {
  host       = host.src
  argv       = ["sh", "-c", "for t in $(nft list tables | awk '/CRIU-/ {print $3}'); do nft delete table inet \"$t\"; done"]
  depends_on = [step.restore]
}
