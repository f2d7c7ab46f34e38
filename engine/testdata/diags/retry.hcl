step "fake" "a" {
  retry {
    attempts = 0 # ERROR: attempts must be a whole number of at least 1, not 0.
  }
}

step "fake" "b" {
  retry {
    attempts = 2
    backoff  = 0.5 # ERROR: backoff must be at least 1.
  }
}
