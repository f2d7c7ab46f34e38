step "fake" "a" {}

step "fake" "c" { # ERROR: depends_on names step "z", which is not declared.
  depends_on = [step.z]
}
