// Command sdkcheck calls every public function of Slicer's Go SDK against a live bulkhead
// daemon and prints one JSON line per named check: {"name","ok","detail"}.
//
// It is built inside a copy of third_party/slicer-sdk-go (as cmd/sdkcheck, so it uses the SDK's
// own vendored dependencies, offline) by crates/bulkhead/tests/e2e_sdk.rs. Every check runs,
// whatever failed before it; a check that needs a node nobody could create fails naming why.
//
// Environment: SDK_URL (socket path or http://host:port), SDK_TOKEN (bearer token, optional),
// SDK_GROUP (host group), SDK_SET ("full": jail nodes, every call; "vm": create/exec/cp/delete;
// "bench": see bench.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	slicer "github.com/slicervm/sdk"
)

type result struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// env is what every check may use: the client, the group and the node under test.
type env struct {
	c      *slicer.SlicerClient
	url    string
	token  string
	group  string
	node   string // the main node; "" when it could not be created
	nodeOK error  // why there is no node
	tmp    string // a private local directory
	vm     bool
}

var checkTimeout = 90 * time.Second

// check runs one named check with a deadline and prints its result; a panic is a failure.
func check(name string, f func(ctx context.Context) (string, error)) bool {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	type out struct {
		detail string
		err    error
	}
	ch := make(chan out, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				ch <- out{"", fmt.Errorf("panic: %v", r)}
			}
		}()
		d, err := f(ctx)
		ch <- out{d, err}
	}()
	var o out
	select {
	case o = <-ch:
	case <-time.After(checkTimeout + 10*time.Second):
		o = out{"", errors.New("timed out")}
	}
	r := result{Name: name, OK: o.err == nil, Detail: o.detail}
	if o.err != nil {
		r.Detail = o.err.Error()
		if o.detail != "" {
			r.Detail += " (" + o.detail + ")"
		}
	}
	if len(r.Detail) > 600 {
		r.Detail = r.Detail[:600] + "..."
	}
	line, _ := json.Marshal(r)
	fmt.Println(string(line))
	return r.OK
}

// needNode fails a check early when the main node is missing.
func (e *env) needNode() error {
	if e.node == "" {
		return fmt.Errorf("no node to act on: %v", e.nodeOK)
	}
	return nil
}

func fail(format string, a ...any) error { return fmt.Errorf(format, a...) }

func main() {
	e := &env{
		url:   os.Getenv("SDK_URL"),
		token: os.Getenv("SDK_TOKEN"),
		group: os.Getenv("SDK_GROUP"),
		vm:    os.Getenv("SDK_SET") == "vm",
	}
	if e.url == "" || e.group == "" {
		fmt.Fprintln(os.Stderr, "sdkcheck: set SDK_URL and SDK_GROUP")
		os.Exit(2)
	}
	if e.vm {
		checkTimeout = 240 * time.Second
	}
	e.c = slicer.NewSlicerClient(e.url, e.token, "bulkhead-sdkcheck", nil)
	dir, err := os.MkdirTemp("", "sdkcheck-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	e.tmp = dir

	if os.Getenv("SDK_SET") == "bench" {
		benchExec(e)
		return
	}
	metaChecks(e)
	createChecks(e)
	execChecks(e)
	copyChecks(e)
	if !e.vm {
		cmdChecks(e)
		bgChecks(e)
		chunkedChecks(e)
		fsChecks(e)
		watchChecks(e)
		tagChecks(e)
		statsChecks(e)
		wsChecks(e)
		lifecycleChecks(e)
		secretsChecks(e) // secrets (#13)
	}
	deleteChecks(e)
}

func metaChecks(e *env) {
	check("info.GetInfo", func(ctx context.Context) (string, error) {
		info, err := e.c.GetInfo(ctx)
		if err != nil {
			return "", err
		}
		// Slicer's spec has version and git_commit; platform and arch are optional in the SDK.
		if info.Version == "" || info.GitCommit == "" {
			return "", fail("info lacks version/git_commit: %+v", *info)
		}
		return fmt.Sprintf("%+v", *info), nil
	})
	check("client.NewSlicerClientFromEnv+NewClientFromEnv", func(ctx context.Context) (string, error) {
		// The SDK insists on a token even for a UNIX socket, where the socket's permissions
		// are the authentication: a Slicer user sets some token there, and bulkhead ignores it.
		token := e.token
		if token == "" {
			token = "ignored-on-the-socket"
		}
		os.Setenv("SLICER_URL", e.url)
		os.Setenv("SLICER_TOKEN", token)
		a, err := slicer.NewSlicerClientFromEnv()
		if err != nil {
			return "", err
		}
		b, err := slicer.NewClientFromEnv("", "", nil)
		if err != nil {
			return "", err
		}
		for _, c := range []*slicer.SlicerClient{a, b} {
			if _, err := c.GetHostGroups(ctx); err != nil {
				return "", err
			}
		}
		return "", nil
	})
	check("hostgroups.GetHostGroups", func(ctx context.Context) (string, error) {
		groups, err := e.c.GetHostGroups(ctx)
		if err != nil {
			return "", err
		}
		for _, g := range groups {
			if g.Name == e.group {
				if g.RamBytes <= 0 || g.CPUs <= 0 {
					return "", fail("group %s has no ram_bytes/cpus: %+v", g.Name, g)
				}
				return fmt.Sprintf("%+v", g), nil
			}
		}
		return "", fail("group %q not in %+v", e.group, groups)
	})
}

func createChecks(e *env) {
	wait := slicer.SlicerCreateNodeOptions{Wait: slicer.SlicerCreateNodeWaitAgent, Timeout: 3 * time.Minute}
	ok := check("nodes.CreateVMWithOptions(tags,wait=agent)", func(ctx context.Context) (string, error) {
		res, err := e.c.CreateVMWithOptions(ctx, e.group, slicer.SlicerCreateNodeRequest{
			Tags: []string{"sdk", "sdk-env=a"},
		}, wait)
		if err != nil {
			return "", err
		}
		if res.Hostname == "" || res.HostGroup != e.group || res.CreatedAt.IsZero() || res.Arch == "" {
			return "", fail("create answered %+v: want hostname, hostgroup, created_at, arch", *res)
		}
		// The full set runs with a node network (as Slicer's nodes always have): an address.
		if !e.vm && res.IPAddress() == nil {
			return "", fail("create answered no ip: %+v", *res)
		}
		e.node = res.Hostname
		return res.Hostname, nil
	})
	if !ok {
		// Carry on with a plain node so that the checks after this one still say something.
		res, err := e.c.CreateVMWithOptions(context.Background(), e.group, slicer.SlicerCreateNodeRequest{}, wait)
		if err != nil {
			e.nodeOK = err
		} else {
			e.node = res.Hostname
		}
	}
	if e.vm {
		return
	}
	check("nodes.CreateVM+DeleteNode", func(ctx context.Context) (string, error) {
		res, err := e.c.CreateVM(ctx, e.group, slicer.SlicerCreateNodeRequest{})
		if err != nil {
			return "", err
		}
		if res.Hostname == "" {
			return "", fail("no hostname in %+v", *res)
		}
		if err := e.c.DeleteNode(e.group, res.Hostname); err != nil {
			return "", fail("DeleteNode: %v", err)
		}
		nodes, err := e.c.ListVMs(ctx)
		if err != nil {
			return "", err
		}
		for _, n := range nodes {
			if n.Hostname == res.Hostname {
				return "", fail("%s still listed after DeleteNode", res.Hostname)
			}
		}
		return res.Hostname, nil
	})
	check("nodes.CreateVMWithOptions(userdata,wait=userdata)", func(ctx context.Context) (string, error) {
		res, err := e.c.CreateVMWithOptions(ctx, e.group, slicer.SlicerCreateNodeRequest{
			Userdata: "#!/bin/sh\necho userdata-ran > /tmp/userdata-mark\n",
		}, slicer.SlicerCreateNodeOptions{Wait: slicer.SlicerCreateNodeWaitUserdata, Timeout: time.Minute})
		if err != nil {
			return "", err
		}
		defer e.c.DeleteVM(context.Background(), e.group, res.Hostname)
		out, err := e.c.ExecBuffered(ctx, res.Hostname, slicer.SlicerExecRequest{Command: "cat", Args: []string{"/tmp/userdata-mark"}})
		if err != nil {
			return "", err
		}
		if out.Stdout != "userdata-ran\n" {
			return "", fail("userdata did not run before wait=userdata answered: %+v", out)
		}
		h, err := e.c.GetAgentHealth(ctx, res.Hostname, true)
		if err != nil {
			return "", err
		}
		if !h.UserdataRan || h.UserdataExitCode == nil || *h.UserdataExitCode != 0 {
			return "", fail("health after userdata: %+v", *h)
		}
		return res.Hostname, nil
	})
	check("nodes.ListVMs", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		nodes, err := e.c.ListVMs(ctx)
		if err != nil {
			return "", err
		}
		for _, n := range nodes {
			if n.Hostname == e.node {
				if n.HostGroup != e.group || n.IP == "" || n.Status != "Running" || n.CreatedAt.IsZero() || n.RamBytes <= 0 || n.CPUs <= 0 {
					return "", fail("listed as %+v: want hostgroup %s, ip, status Running, created_at, ram_bytes, cpus", n, e.group)
				}
				return fmt.Sprintf("%+v", n), nil
			}
		}
		return "", fail("%s not in %+v", e.node, nodes)
	})
	check("nodes.ListVMs(tag,tag_prefix)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		for _, o := range []struct {
			opts slicer.ListOptions
			want bool
		}{
			{slicer.ListOptions{Tag: "sdk"}, true},
			{slicer.ListOptions{TagPrefix: "sdk-env"}, true},
			{slicer.ListOptions{Tag: "sdk-env"}, false},
			{slicer.ListOptions{Tag: "no-such-tag"}, false},
		} {
			nodes, err := e.c.ListVMs(ctx, o.opts)
			if err != nil {
				return "", err
			}
			has := slices.ContainsFunc(nodes, func(n slicer.SlicerNode) bool { return n.Hostname == e.node })
			if has != o.want {
				return "", fail("ListVMs(%+v) lists the node: %v, want %v", o.opts, has, o.want)
			}
		}
		return "", nil
	})
	check("hostgroups.GetHostGroupNodes", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		nodes, err := e.c.GetHostGroupNodes(ctx, e.group)
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(nodes, func(n slicer.SlicerNode) bool { return n.Hostname == e.node && slices.Contains(n.Tags, "sdk") }) {
			return "", fail("%s (tag sdk) not in %+v", e.node, nodes)
		}
		return "", nil
	})
	// The SDK writes the filter into the path (`nodes%3Ftag=...`), which no route matches, on
	// Slicer's server as on ours: an SDK defect (slicer-compat.md), kept so that a fix shows.
	check("hostgroups.GetHostGroupNodes(tag)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		tagged, err := e.c.GetHostGroupNodes(ctx, e.group, slicer.ListOptions{Tag: "sdk"})
		if err != nil {
			return "", err
		}
		if len(tagged) != 1 || tagged[0].Hostname != e.node {
			return "", fail("tag filter gave %+v, want only %s", tagged, e.node)
		}
		return "", nil
	})
	check("describe.DescribeVM", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		d, err := e.c.DescribeVM(ctx, e.node)
		if err != nil {
			return "", err
		}
		if d.Hostname != e.node || d.HostGroup != e.group || d.IP == "" || d.Status == "" || !slices.Contains(d.Tags, "sdk") {
			return "", fail("describe answered %+v", *d)
		}
		if _, err := e.c.DescribeVM(ctx, "no-such-node"); !slicer.IsAPIStatus(err, 404) {
			return "", fail("DescribeVM(no-such-node) = %v, want a 404 APIError", err)
		}
		return fmt.Sprintf("%+v", *d), nil
	})
}

func deleteChecks(e *env) {
	check("nodes.DeleteVM", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		res, err := e.c.DeleteVM(ctx, e.group, e.node)
		if err != nil {
			return "", err
		}
		if res.Error != "" {
			return "", fail("delete answered an error: %+v", *res)
		}
		nodes, err := e.c.ListVMs(ctx)
		if err != nil {
			return "", err
		}
		if slices.ContainsFunc(nodes, func(n slicer.SlicerNode) bool { return n.Hostname == e.node }) {
			return "", fail("%s still listed after DeleteVM", e.node)
		}
		if _, err := e.c.DeleteVM(ctx, e.group, e.node); err == nil || !strings.Contains(err.Error(), "404") {
			return "", fail("second DeleteVM = %v, want status 404", err)
		}
		return fmt.Sprintf("%+v", *res), nil
	})
}

// trim shortens output for a detail line.
func trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
