settings {
  # The run rolls back although the restored container served clients.
  rollback_after_serving = true
}
