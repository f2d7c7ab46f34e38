variable "n" {
  default = 3
  type    = number
}

step "fake" "a" {
  for_each = "abc" # ERROR: for_each needs a map or a set of strings, not string.
}

step "fake" "b" {
  for_each = var.n # ERROR: for_each needs a map or a set of strings, not number.
}
