step "fake" "a" { # ERROR: The steps depend on each other in a cycle: step.a → step.c → step.b → step.a.
  value = step.b.value
}

step "fake" "b" {
  value = step.c.value
}

step "fake" "c" {
  depends_on = [step.a]
}

step "fake" "free" {}
