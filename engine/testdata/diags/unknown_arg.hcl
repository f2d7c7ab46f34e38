step "fake" "a" {
  valeu = "x" # ERROR: Unsupported argument; An argument named "valeu" is not expected here. Did you mean "value"?
}
