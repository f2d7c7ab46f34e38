step "move_ip" "move_ip_address" {
  address = "10.0.0.100" # ERROR: Invalid address; "10.0.0.100": want an address with its prefix length
  from    = host.a
  to      = host.b
}

step "move_ip" "move_ip_v6" {
  address = "fd00::1/64" # ERROR: Unsupported address; fd00::1/64: move_ip announces with ARP and supports IPv4 only.
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
