probe "web" {
  http     = "http://10.0.0.100:8080/"
  interval = "0s"   # ERROR: Invalid interval; interval must be positive.
  timeout  = "soon" # ERROR: Invalid timeout; timeout: "soon" is not a duration: use a number and a unit, such as "30s" or "1m30s"
  after    = "-1s"  # ERROR: Invalid after; after "-1s" cannot be negative.
}

probe "kv" {
  tcp {
    address = "10.0.0.100:6379"
  }
  interval = 5 # ERROR: Invalid interval; interval: "5" is not a duration
}

load "web" {
  http    = "http://10.0.0.100:8080/"
  rate    = 100
  timeout = "1d" # ERROR: Invalid timeout; timeout: "1d" is not a duration
  before  = "1m"
}

step "fake" "a" {}
