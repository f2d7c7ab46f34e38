step "fake" "ok" {}

step "fkae" "a" { # ERROR: There is no step kind "fkae". Did you mean "fake"?
  value = "x"
}
