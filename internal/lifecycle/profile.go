package lifecycle

import (
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
)

// profile starts what HSMFS_CPUPROFILE and HSMFS_MEMPROFILE ask for (for
// performance work) and returns what stops it.
func profile(log *slog.Logger) (stop func()) {
	var stops []func()
	if p := os.Getenv("HSMFS_CPUPROFILE"); p != "" {
		// The daemon is profiled until it unmounts.
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
		}
	}
	if p := os.Getenv("HSMFS_MEMPROFILE"); p != "" {
		// SIGUSR1 writes a heap profile (after a collection) to p,
		// replacing the previous one.
		usr := make(chan os.Signal, 1)
		signal.Notify(usr, syscall.SIGUSR1)
		stops = append(stops, func() { signal.Stop(usr) })
		go func() {
			for range usr {
				if err := writeHeapProfile(p); err != nil {
					log.Warn("heap profile", "err", err)
				}
			}
		}()
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
