variable "pid" { # ERROR: No value for required variable; Variable "pid" has no default.
  type = number
}

step "fake" "a" {
  count = var.pid
}
