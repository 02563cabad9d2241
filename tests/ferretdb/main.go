// Command ferretdb-fixture runs FerretDB 1.24, embedded through its `ferretdb` package, as the
// MongoDB-wire server of followup's tests. It listens on 127.0.0.1 only and keeps its data in
// the directory the caller names, so every test run starts from an empty database.
//
// It stops on SIGINT or SIGTERM, and also when the process that started it dies: a test that
// is killed cannot run its clean-up, and a server left behind would hold the port.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// parentPollInterval is how often the server checks that its parent is still alive.
const parentPollInterval = 500 * time.Millisecond

func main() {
	port := flag.Int("port", 0, "TCP port to listen on, on 127.0.0.1 (required)")
	data := flag.String("data", "", "directory of the SQLite backend's files, created if missing")
	handler := flag.String("handler", "sqlite", "backend: sqlite or postgresql")
	postgresqlURL := flag.String("postgresql-url", "", "PostgreSQL URL, for --handler postgresql")
	flag.Parse()

	if err := run(*port, *data, *handler, *postgresqlURL); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb-fixture: %v\n", err)
		os.Exit(1)
	}
}

func run(port int, data, handler, postgresqlURL string) error {
	if port <= 0 || port > 65535 {
		return errors.New("--port must be a TCP port between 1 and 65535")
	}
	config := &ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: fmt.Sprintf("127.0.0.1:%d", port)},
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Handler:  handler,
	}
	switch handler {
	case "sqlite":
		url, err := sqliteURL(data)
		if err != nil {
			return err
		}
		config.SQLiteURL = url
	case "postgresql":
		if postgresqlURL == "" {
			return errors.New("--handler postgresql needs --postgresql-url")
		}
		config.PostgreSQLURL = postgresqlURL
	default:
		return fmt.Errorf("--handler %q is not supported; use sqlite or postgresql", handler)
	}

	server, err := ferretdb.New(config)
	if err != nil {
		return fmt.Errorf("starting FerretDB: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cancelWhenOrphaned(cancel)

	return server.Run(ctx)
}

// sqliteURL makes the data directory and returns the SQLite backend's URL for it, which must
// name an existing directory and end with a slash.
func sqliteURL(data string) (string, error) {
	if data == "" {
		return "", errors.New("--data DIR is required with the sqlite backend")
	}
	dir, err := filepath.Abs(data)
	if err != nil {
		return "", fmt.Errorf("--data %s: %w", data, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating --data %s: %w", dir, err)
	}
	return "file:" + dir + "/", nil
}

// cancelWhenOrphaned cancels the server once its parent process is gone, which shows as a
// change of the parent's pid (the orphan is adopted by init or a subreaper).
func cancelWhenOrphaned(cancel context.CancelFunc) {
	parent := os.Getppid()
	for {
		time.Sleep(parentPollInterval)
		if os.Getppid() != parent {
			slog.Warn("parent process exited; stopping")
			cancel()
			return
		}
	}
}
