host "local" {}

step "fake" "x" {
  value = "a"
}
