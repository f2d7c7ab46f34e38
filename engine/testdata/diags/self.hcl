step "fake" "a" {
  value = step.a.value # ERROR: Self-referential step
}

step "fake" "b" {
  depends_on = [step.b] # ERROR: Step "b" cannot refer to itself.
}
