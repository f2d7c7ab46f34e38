step "fake" "b" {
  retry {
    tries = 3 # ERROR: Unsupported argument
  }
}
