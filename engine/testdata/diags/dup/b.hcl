host "local" {} # ERROR: Duplicate host "local"

step "fake" "x" { # ERROR: Duplicate step "x"; A step named "x" was already declared at
  value = "b"
}
