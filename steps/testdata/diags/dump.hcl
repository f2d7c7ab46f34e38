step "dump" "dump_mode" {
  workload = process.web
  mode     = "dsk" # ERROR: Invalid mode; mode "dsk": want "disk", "page-server" or "lazy".
  dir      = "/var/lib/mig/web"
}

step "dump" "dump_paths" {
  workload   = process.web
  dir        = "images" # ERROR: Invalid dir; dir must be an absolute path, not "images".
  target_dir = "pages"  # ERROR: target_dir must be an absolute path, not "pages".
}

step "dump" "dump_port" {
  workload = process.web
  mode     = "lazy"
  dir      = "/var/lib/mig/web"
  port     = 70000 # ERROR: Invalid port; port is 70000: it must be between 0 and 65535.
}

step "dump" "dump_workload" {
  workload = host.a # ERROR: Invalid workload; workload: want a workload such as process.web
  dir      = "/var/lib/mig/web"
}

step "dump" "dump_target" { # ERROR: Missing target; mode = "page-server" needs target
  workload = process.web
  mode     = "page-server"
  dir      = "/var/lib/mig/web"
}

step "dump" "dump_types" {
  workload = process.web
  dir      = "/var/lib/mig/web"
  port     = "any" # ERROR: Incorrect attribute value type
}

# Unknown values are checked once known, at apply.
step "dump" "dump_unknown" {
  workload = process.web
  mode     = var.unset
  dir      = var.unset
  target   = host.b
}
