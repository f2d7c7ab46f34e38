step "fake" "a" {}

step "fake" "b" {
  depends_on = ["a"] # ERROR: Invalid depends_on
}
