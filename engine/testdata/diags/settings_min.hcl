settings {
  hold_timeout = "500ms" # ERROR: Invalid hold_timeout; "500ms": it must be at least 1s
}

step "fake" "a" {
}
