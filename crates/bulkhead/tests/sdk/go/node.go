// Node checks: tags, stats, health, logs and the lifecycle calls (pause, resume, shutdown,
// relaunch, suspend, restore).
package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	slicer "github.com/slicervm/sdk"
)

func tagChecks(e *env) {
	want := func(t *slicer.SlicerVMTags, err error, tags ...string) error {
		if err != nil {
			return err
		}
		got := slices.Clone(t.Tags)
		slices.Sort(got)
		w := slices.Clone(tags)
		slices.Sort(w)
		if t.Hostname != e.node || !slices.Equal(got, w) {
			return fail("tags %+v, want %v", *t, tags)
		}
		return nil
	}
	check("tags.GetVMTags", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		t, err := e.c.GetVMTags(ctx, e.node)
		return "", want(t, err, "sdk", "sdk-env=a")
	})
	check("tags.AddVMTags", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		t, err := e.c.AddVMTags(ctx, e.node, "added", "sdk")
		return "", want(t, err, "sdk", "sdk-env=a", "added")
	})
	check("tags.RemoveVMTags", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		t, err := e.c.RemoveVMTags(ctx, e.node, "sdk-env=a")
		return "", want(t, err, "sdk", "added")
	})
	check("tags.UpdateVMTags", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		t, err := e.c.UpdateVMTags(ctx, e.node, slicer.SlicerVMTagUpdate{Add: []string{"u1"}, Remove: []string{"added"}})
		return "", want(t, err, "sdk", "u1")
	})
	check("tags.ReplaceVMTags", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		t, err := e.c.ReplaceVMTags(ctx, e.node, "sdk", "replaced")
		if err := want(t, err, "sdk", "replaced"); err != nil {
			return "", err
		}
		nodes, err := e.c.ListVMs(ctx, slicer.ListOptions{Tag: "replaced"})
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(nodes, func(n slicer.SlicerNode) bool { return n.Hostname == e.node }) {
			return "", fail("ListVMs(tag=replaced) does not list the node: %+v", nodes)
		}
		return "", nil
	})
}

func statsChecks(e *env) {
	snapOK := func(s slicer.SlicerNodeStat) error {
		if s.Error != "" || s.Snapshot == nil {
			return fail("stat %+v", s)
		}
		p := s.Snapshot
		if p.TotalMemory == 0 || p.MemoryUsed == 0 || p.TotalCPUS <= 0 || p.DiskSpaceTotal == 0 || p.Timestamp.IsZero() || p.Uptime == "" {
			return fail("snapshot lacks memory/cpus/disk/timestamp/uptime: %+v", *p)
		}
		return nil
	}
	check("stats.GetVMStats(all)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		stats, err := e.c.GetVMStats(ctx, "")
		if err != nil {
			return "", err
		}
		for _, s := range stats {
			if s.Hostname == e.node {
				return fmt.Sprintf("%+v", *s.Snapshot), snapOK(s)
			}
		}
		return "", fail("%s not in %+v", e.node, stats)
	})
	check("stats.GetVMStats(node)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		stats, err := e.c.GetVMStats(ctx, e.node)
		if err != nil {
			return "", err
		}
		if len(stats) != 1 || stats[0].Hostname != e.node {
			return "", fail("got %+v, want one stat for %s", stats, e.node)
		}
		return "", snapOK(stats[0])
	})
	check("health.GetAgentHealth", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		h, err := e.c.GetAgentHealth(ctx, e.node, true)
		if err != nil {
			return "", err
		}
		if h.Hostname != e.node || h.AgentVersion == "" || h.AgentUptime <= 0 || h.SystemUptime <= 0 {
			return "", fail("health %+v: want hostname, agent_version, agent_uptime, system_uptime", *h)
		}
		if _, err := e.c.GetAgentHealth(ctx, e.node, false); err != nil {
			return "", fail("HEAD health: %v", err)
		}
		return fmt.Sprintf("%+v", *h), nil
	})
	check("logs.GetVMLogs", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		l, err := e.c.GetVMLogs(ctx, e.node, 5)
		if err != nil {
			return "", err
		}
		if l.Hostname != e.node || l.Lines < 0 || l.Lines > 5 || strings.Count(strings.TrimRight(l.Content, "\n"), "\n") > 4 {
			return "", fail("logs %+v: want hostname and at most 5 lines", *l)
		}
		all, err := e.c.GetVMLogs(ctx, e.node, 0)
		if err != nil {
			return "", fail("lines=0: %v", err)
		}
		return fmt.Sprintf("%d lines of %d bytes", l.Lines, len(all.Content)), nil
	})
}

// status is the node's listed status, or "" when it is not listed.
func (e *env) status(ctx context.Context) string {
	nodes, err := e.c.ListVMs(ctx)
	if err != nil {
		return "list: " + err.Error()
	}
	for _, n := range nodes {
		if n.Hostname == e.node {
			return n.Status
		}
	}
	return ""
}

// waitExec waits until an exec in the node works again (after a restart).
func (e *env) waitExec(ctx context.Context) error {
	var last error
	for ctx.Err() == nil {
		out, err := e.sh(ctx, "echo up")
		if err == nil && out == "up\n" {
			return nil
		}
		last = err
		time.Sleep(300 * time.Millisecond)
	}
	return fail("exec did not work again: %v", last)
}

func lifecycleChecks(e *env) {
	check("lifecycle.PauseVM+ResumeVM", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if err := e.c.PauseVM(ctx, e.node); err != nil {
			return "", err
		}
		if s := e.status(ctx); s != "Paused" {
			_ = e.c.ResumeVM(ctx, e.node)
			return "", fail("status after pause %q, want Paused", s)
		}
		if err := e.c.ResumeVM(ctx, e.node); err != nil {
			return "", err
		}
		if s := e.status(ctx); s != "Running" {
			return "", fail("status after resume %q, want Running", s)
		}
		return "", e.waitExec(ctx)
	})
	// The SDK's default action is reboot, "the graceful stop mechanism" (on Firecracker a guest
	// reboot ends the VM): the node either stops (then relaunch brings it back) or restarts
	// (its agent's uptime starts again). Either way it must come back working.
	check("lifecycle.Shutdown(reboot)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		time.Sleep(1100 * time.Millisecond)
		before, err := e.c.GetAgentHealth(ctx, e.node, true)
		if err != nil {
			return "", err
		}
		if err := e.c.Shutdown(ctx, e.node, nil); err != nil {
			return "", err
		}
		how := ""
		for how == "" {
			if s := e.status(ctx); s == "Stopped" {
				how = "stopped"
				if _, err := e.c.RelaunchVM(ctx, e.node); err != nil {
					return "", fail("relaunch after the reboot stopped the node: %v", err)
				}
			} else if h, err := e.c.GetAgentHealth(ctx, e.node, true); err == nil && h.AgentUptime > 0 && h.AgentUptime < before.AgentUptime {
				how = "restarted"
			}
			if how == "" && ctx.Err() != nil {
				return "", fail("after reboot the node neither stopped nor restarted (status %q)", e.status(context.Background()))
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := e.waitExec(ctx); err != nil {
			return "", err
		}
		return how, nil
	})
	check("lifecycle.Shutdown(shutdown)+RelaunchVM", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if err := e.c.Shutdown(ctx, e.node, &slicer.SlicerShutdownRequest{Action: "shutdown"}); err != nil {
			return "", err
		}
		deadline := time.Now().Add(30 * time.Second)
		for e.status(ctx) != "Stopped" && time.Now().Before(deadline) {
			time.Sleep(300 * time.Millisecond)
		}
		if s := e.status(ctx); s != "Stopped" {
			return "", fail("status after shutdown %q, want Stopped", s)
		}
		r, err := e.c.RelaunchVM(ctx, e.node)
		if err != nil {
			return "", err
		}
		if r.Hostname != e.node {
			return "", fail("relaunch answered %+v", *r)
		}
		if err := e.waitExec(ctx); err != nil {
			return "", err
		}
		if s := e.status(ctx); s != "Running" {
			return "", fail("status after relaunch %q, want Running", s)
		}
		return "", nil
	})
	// Jail nodes: a suspend either works (then restore brings the node back) or is refused
	// with a clear 4xx saying why; a missing route (404/405) or a 5xx is a failure.
	check("lifecycle.SuspendVM+RestoreVM", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		err := e.c.SuspendVM(ctx, e.node)
		if err != nil {
			if refusedClearly(err) {
				return "refused: " + err.Error(), nil
			}
			return "", err
		}
		if err := e.c.RestoreVM(ctx, e.node); err != nil {
			return "", err
		}
		return "suspended and restored", e.waitExec(ctx)
	})
	check("lifecycle.RestoreVMWithOptions(wait=agent)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if err := e.c.SuspendVM(ctx, e.node); err != nil {
			if refusedClearly(err) {
				return "refused: " + err.Error(), nil
			}
			return "", err
		}
		err := e.c.RestoreVMWithOptions(ctx, e.node, slicer.SlicerRestoreVMOptions{Wait: slicer.SlicerRestoreVMWaitAgent, Timeout: time.Minute})
		if err != nil {
			return "", err
		}
		out, err := e.sh(ctx, "echo up")
		if err != nil || out != "up\n" {
			return "", fail("exec right after restore with wait=agent: %q %v", out, err)
		}
		return "", nil
	})
}

// refusedClearly: a 4xx other than 404/405 (a route that exists and says no), with a message.
func refusedClearly(err error) bool {
	msg := err.Error()
	for _, code := range []string{"400", "409", "422"} {
		if strings.Contains(msg, code+" ") && strings.Contains(msg, "{") {
			return true
		}
	}
	return false
}
