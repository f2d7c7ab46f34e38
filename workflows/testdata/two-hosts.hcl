# Steps on two lab hosts over SSH: each says who it is, then a 512 MiB file
# crosses from h1 to h2 through a sha256-checked copy, and both sides'
# sums are compared.

variable "lab" {
  type = string
}

variable "source_address" {
  type = string
}

variable "target_address" {
  type = string
}

variable "service_ip" {
  type    = string
  default = ""
}

locals {
  file = "/var/lib/mig/big"
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

step "exec" "src_name" {
  host = host.src
  argv = ["hostname"]
}

step "exec" "dst_name" {
  host = host.dst
  argv = ["hostname"]
}

step "exec" "make" {
  host = host.src
  argv = ["dd", "if=/dev/urandom", "of=${local.file}", "bs=1M", "count=512", "status=none"]
}

step "copy" "big" {
  from        = host.src
  to          = host.dst
  source      = local.file
  destination = local.file
  depends_on  = [step.make]
}

step "exec" "src_sum" {
  host       = host.src
  argv       = ["sha256sum", local.file]
  depends_on = [step.make]
}

step "exec" "dst_sum" {
  host = host.dst
  argv = ["sha256sum", step.big.path]
}
