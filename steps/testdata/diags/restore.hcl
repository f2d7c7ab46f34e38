step "restore" "restore_dir" {
  workload = process.web
  host     = host.b
  dir      = "images" # ERROR: Invalid dir; dir must be an absolute path, not "images".
}

step "restore" "restore_prefetch" { # ERROR: Invalid prefetch; prefetch applies to a lazy restore (lazy = true).
  workload = process.web
  host     = host.b
  dir      = "/var/lib/mig/web"
  prefetch = true
}

step "restore" "restore_source" { # ERROR: Missing source; lazy = true needs source
  workload = process.web
  host     = host.b
  dir      = "/var/lib/mig/web"
  lazy     = true
}

step "restore" "restore_source_type" {
  workload = process.web
  host     = host.b
  dir      = "/var/lib/mig/web"
  lazy     = true
  source   = "10.0.0.1:27000" # ERROR: Incorrect attribute value type
}

step "restore" "restore_workload" {
  workload = "web" # ERROR: Invalid workload
  host     = host.b
  dir      = "/var/lib/mig/web"
}
