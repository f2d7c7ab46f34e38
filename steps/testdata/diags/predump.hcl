step "predump" "predump_rounds" {
  workload   = process.web
  dir        = "/var/lib/mig/web"
  max_rounds = 0 # ERROR: Invalid max_rounds; max_rounds is 0: it must be between 1 and 100.
}

step "predump" "predump_policy" {
  workload   = process.web
  dir        = "/var/lib/mig/web"
  max_rounds = 101  # ERROR: max_rounds is 101: it must be between 1 and 100.
  min_pages  = -1   # ERROR: Invalid min_pages; min_pages is -1: it must be at least 0.
  max_growth = -0.5 # ERROR: Invalid max_growth; max_growth is -0.5: it must be at least 0.
}

step "predump" "predump_unsupported" {
  workload    = process.web
  dir         = "rel"    # ERROR: dir must be an absolute path, not "rel".
  target_dir  = "pages"  # ERROR: target_dir must be an absolute path, not "pages".
  unsupported = "ignore" # ERROR: Invalid unsupported; unsupported "ignore": want "fail" or "skip".
}
