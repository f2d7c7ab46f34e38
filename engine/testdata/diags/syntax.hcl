step "fake" "a" {
  value = "x" + # ERROR: Invalid expression
}
