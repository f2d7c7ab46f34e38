step "archive" "archive_pack" {
  host        = host.a
  source      = "images"  # ERROR: Invalid source; source must be an absolute path, not "images".
  destination = "web.tar" # ERROR: Invalid destination; destination must be an absolute path, not "web.tar".
}

step "unarchive" "unarchive_unpack" {
  host        = host.b
  source      = "web.tar" # ERROR: source must be an absolute path, not "web.tar".
  destination = "/var/lib/mig/web"
}

step "copy" "copy_images" {
  from        = host.a
  to          = host.b
  source      = "/var/lib/mig/web"
  destination = "web" # ERROR: Invalid destination; destination must be an absolute path, not "web".
}
