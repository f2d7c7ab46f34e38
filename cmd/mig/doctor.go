package main

func cmdDoctor(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }
