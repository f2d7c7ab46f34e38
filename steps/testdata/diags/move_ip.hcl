step "move_ip" "move_ip_address" {
  address = "10.0.0.100" # ERROR: Invalid address; "10.0.0.100": want an address with its prefix length
  from    = host.a
  to      = host.b
}

step "move_ip" "move_ip_v6" {
  address = "fd00::1/64"
  from    = host.a
  to      = host.b
}

step "move_ip" "move_ip_link_local" {
  address = "fe80::1/64" # ERROR: Unsupported address; fe80::1/64: a link-local address belongs to its link, not to a service.
  from    = host.a
  to      = host.b
}

step "move_ip" "move_ip_mapped" {
  address = "::ffff:10.0.0.1/120" # ERROR: Unsupported address; ::ffff:10.0.0.1/120: write an IPv4 address as IPv4.
  from    = host.a
  to      = host.b
}

step "move_ip" "move_ip_announce" {
  address  = "10.0.0.100/24"
  from     = host.a
  to       = host.b
  announce = 101 # ERROR: Invalid announce; announce is 101: it must be between 0 and 100.
}

step "move_ip" "move_ip_same" { # ERROR: Nothing to move; from and to are both a:eth0.
  address = "10.0.0.100/24"
  from    = host.a
  to      = host.a
}
