package main

func cmdLab(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }
