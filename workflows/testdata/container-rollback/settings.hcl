# The rollback this test checks comes after the restored container served:
# the default would keep the target (see engine/load.go, settings).
settings {
  rollback_after_serving = true
}
