step "fake" "a" {}

step "fake" "c" {
  depends_on = [step.a, step.z] # ERROR: depends_on names step "z", which is not declared.
}
