step "fake" "c" {
  value = each.key # ERROR: Reference not allowed here
}
