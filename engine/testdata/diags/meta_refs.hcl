step "fake" "a" {}

step "fake" "c" {
  timeout = step.a.value # ERROR: step.* cannot be used in this expression.
}
