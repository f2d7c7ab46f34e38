settings {
  hold_timeout = "soon" # ERROR: Invalid hold_timeout
}

settings { # ERROR: Duplicate settings block
  hold_timeout = "500ms"
}

step "fake" "a" {
}
