step "verify" "verify_interval" {
  tcp { address = "10.0.0.100:80" }
  interval = "soon" # ERROR: Invalid interval; interval: "soon" is not a duration: use a number and a unit, such as "30s" or "1m30s"
}

step "verify" "verify_negative" {
  tcp { address = "10.0.0.100:80" }
  interval = "-1s" # ERROR: Invalid interval; interval "-1s" cannot be negative.
}

step "verify" "verify_zero" {
  tcp { address = "10.0.0.100:80" }
  interval = "0s" # ERROR: Invalid interval; interval must be positive.
}

step "verify" "verify_http" {
  http {
    url        = "ftp://a/" # ERROR: Invalid URL; "ftp://a/" is not an http or https URL.
    status     = 999        # ERROR: Invalid status; status is 999: it must be between 100 and 599.
    body_regex = "("        # ERROR: Invalid body_regex; error parsing regexp: missing closing )
  }
}

step "verify" "verify_tcp" {
  tcp {
    address = "nohost" # ERROR: Invalid address; "nohost": want host:port.
  }
}

step "verify" "verify_process" {
  process {
    host = host.b
    pid  = 0 # ERROR: Invalid pid; pid is 0: it must be at least 1.
  }
}

step "verify" "verify_exec" {
  exec {
    host = host.b
    argv = [] # ERROR: Empty argv
  }
}

step "verify" "verify_none" { # ERROR: Need exactly one check
  interval = "1s"
}
