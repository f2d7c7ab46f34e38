stpe "fake" "a" { # ERROR: Unsupported block type
}
