step "exec" "exec_empty" {
  host = host.a
  argv = [] # ERROR: Empty argv; argv needs at least the program to run.
}

step "exec" "exec_exit" {
  host        = host.a
  argv        = ["true"]
  expect_exit = 256 # ERROR: Invalid expect_exit; expect_exit is 256: it must be between 0 and 255.
}

step "exec" "exec_host" {
  host = 5 # ERROR: Not a host; want a host, such as host.src.
  argv = ["true"]
}
