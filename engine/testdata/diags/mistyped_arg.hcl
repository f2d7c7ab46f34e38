step "fake" "a" {
  count = "many" # ERROR: Incorrect attribute value type
  list  = "one"  # ERROR: Incorrect attribute value type
}
