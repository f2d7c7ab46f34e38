step "fake" "a" {
  timeout = "10 seconds" # ERROR: Invalid timeout; "10 seconds" is not a duration
}

step "fake" "b" {
  timeout = 30 # ERROR: timeout must be a duration string such as "30s".
  retry {
    delay     = "soon" # ERROR: Invalid delay
    max_delay = "-1s"  # ERROR: max_delay cannot be negative.
  }
}
