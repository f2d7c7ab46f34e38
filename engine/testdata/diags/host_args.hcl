host "remote" {
  ssh {
    address         = "10.0.0.2:22"
    connect_timeout = "3 seconds" # ERROR: Invalid connect_timeout; connect_timeout: "3 seconds" is not a duration
  }
}

step "fake" "a" {}
