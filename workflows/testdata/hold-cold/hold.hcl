# Added to a strategy: a short hold timeout, and a step that runs once the
# target serves, so that a test can kill mig at a known phase.
settings {
  hold_timeout = "5s"
}

variable "pause" {
  type    = string
  default = "0"
}

step "exec" "pause" {
  host       = host.src
  argv       = ["sleep", var.pause]
  depends_on = [step.up]
}
