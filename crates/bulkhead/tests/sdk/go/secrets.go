package main

// Secrets (#13): ListSecrets, CreateSecret (ErrSecretExists on a taken name), PatchSecret
// (content, and metadata only with the SDK's empty data), DeleteSecret, and a node created
// with Secrets that finds its file at /run/secrets/<name> with the asked owner and mode.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	slicer "github.com/slicervm/sdk"
)

func secretsChecks(e *env) {
	name := fmt.Sprintf("sdk-go-%d", time.Now().UnixNano())
	value := "go-sdk-value-" + name
	check("secrets.CreateSecret+ListSecrets", func(ctx context.Context) (string, error) {
		err := e.c.CreateSecret(ctx, slicer.CreateSecretRequest{
			Name: name, Data: base64.StdEncoding.EncodeToString([]byte(value)),
			Permissions: "0440", UID: 1000, GID: 1000,
		})
		if err != nil {
			return "", err
		}
		again := e.c.CreateSecret(ctx, slicer.CreateSecretRequest{Name: name, Data: base64.StdEncoding.EncodeToString([]byte("x"))})
		if !errors.Is(again, slicer.ErrSecretExists) {
			return "", fail("second CreateSecret = %v, want ErrSecretExists", again)
		}
		list, err := e.c.ListSecrets(ctx)
		if err != nil {
			return "", err
		}
		for _, s := range list {
			if s.Name == name {
				if s.Size != int64(len(value)) || s.Permissions != "0440" || s.UID != 1000 || s.GID != 1000 || s.ModifiedAt == nil {
					return "", fail("listed as %+v", s)
				}
				return fmt.Sprintf("%+v", s), nil
			}
		}
		return "", fail("%s not in %+v", name, list)
	})
	check("secrets.CreateVM(secrets)+PatchSecret", func(ctx context.Context) (string, error) {
		res, err := e.c.CreateVMWithOptions(ctx, e.group, slicer.SlicerCreateNodeRequest{Secrets: []string{name}},
			slicer.SlicerCreateNodeOptions{Wait: slicer.SlicerCreateNodeWaitAgent, Timeout: 3 * time.Minute})
		if err != nil {
			return "", err
		}
		defer e.c.DeleteVM(context.Background(), e.group, res.Hostname)
		read := func() (string, error) {
			r, err := e.c.ExecBuffered(ctx, res.Hostname, slicer.SlicerExecRequest{
				Command: "cat /run/secrets/" + name + "; stat -c ' %a %u %g' /run/secrets/" + name, Shell: "/bin/sh", Stdio: "text"})
			if err != nil {
				return "", err
			}
			return strings.TrimSpace(r.Stdout), nil
		}
		got, err := read()
		if err != nil {
			return "", err
		}
		if got != value+" 440 1000 1000" {
			return "", fail("the node reads %q", got)
		}
		// Metadata only: the SDK sends data "" (kept).
		if err := e.c.PatchSecret(ctx, name, slicer.UpdateSecretRequest{Permissions: "0400"}); err != nil {
			return "", err
		}
		if err := e.c.PatchSecret(ctx, name, slicer.UpdateSecretRequest{Data: base64.StdEncoding.EncodeToString([]byte("new-" + value))}); err != nil {
			return "", err
		}
		list, err := e.c.ListSecrets(ctx)
		if err != nil {
			return "", err
		}
		for _, s := range list {
			if s.Name == name && (s.Size != int64(len("new-"+value)) || s.Permissions != "0400") {
				return "", fail("after PatchSecret: %+v", s)
			}
		}
		return got, nil
	})
	check("secrets.DeleteSecret", func(ctx context.Context) (string, error) {
		if err := e.c.DeleteSecret(ctx, name); err != nil {
			return "", err
		}
		if err := e.c.DeleteSecret(ctx, name); err == nil || !strings.Contains(err.Error(), "404") {
			return "", fail("second DeleteSecret = %v, want 404", err)
		}
		if err := e.c.PatchSecret(ctx, name, slicer.UpdateSecretRequest{Permissions: "0400"}); err == nil {
			return "", fail("PatchSecret of a deleted secret succeeded")
		}
		return "", nil
	})
}
