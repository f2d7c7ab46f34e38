variable "name" {
  default = "x"
}

host "local" {}

step "fake" "first" {
  value = var.nmae # ERROR: There is no variable named "nmae". Did you mean "name"?
}

step "fake" "second" {
  host  = host.locl         # ERROR: There is no host named "locl". Did you mean "local"?
  value = step.frist.value  # ERROR: There is no step named "frist". Did you mean "first"?
  list  = [stp.first.value] # ERROR: There is no variable named "stp". Did you mean "step"?
  count = local.n           # ERROR: There is no local value named "n".
}
