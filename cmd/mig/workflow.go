package main

func cmdValidate(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }

func cmdPlan(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }

func cmdApply(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }

func cmdFmt(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }

func cmdGraph(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }

func cmdRuns(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }

func cmdShow(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }

func cmdVersion(c *cli, args []string) int { c.log.Error("not implemented"); return exitUsage }
