package main

func cmdAgent(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }
