# container-cold.hcl: stop-and-copy of a runc container. The container is
# frozen and checkpointed, its images are packed into a checksummed archive,
# copied to the target, checked, and the container is created there from its
# bundle and restored. The pause lasts the whole dump, copy and restore.
#
# The defaults are those of `mig lab up` and `make demo-container`: container
# "web" runs cmd/counter on lab host h1 behind the service address
# 10.77.0.100, and moves to h2.
#
#   mig plan workflows/container-cold.hcl
#   mig apply -var container_id=web workflows/container-cold.hcl
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
# source, and the source container resumes where it stopped.

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

# target: the dump guards the target from before the freeze until the
# restore there ends (new connections held, moved ones never reset).
step "dump" "final" {
  workload = container.web
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
  workload   = container.web
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
