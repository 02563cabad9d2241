// Figures of a run: percentiles, peak memory of this process and of Redis, CPU time of both.

/** The value at quantile `q` (0 to 1) of `values`, nearest rank; 0 for no values. */
export function percentile(sorted, q) {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

/** Reads `field:value` lines of a Redis INFO section into numbers. */
export function parseInfo(text) {
  const fields = {};
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) {
      const value = Number(line.slice(colon + 1).trim());
      if (Number.isFinite(value)) fields[line.slice(0, colon)] = value;
    }
  }
  return fields;
}

/** CPU seconds Redis has used since it started, user and system together. */
export async function redisCpuSeconds(redis) {
  const info = parseInfo(await redis.info('cpu'));
  return (info.used_cpu_user ?? 0) + (info.used_cpu_sys ?? 0);
}

/**
 * Samples the resident memory of this process and of Redis every `periodMs` until stopped,
 * keeping the peaks. Redis reports its own RSS in INFO, so no process id is needed.
 */
export function startMemorySampler(redis, periodMs = 200) {
  const peaks = { nodeRssBytes: 0, redisRssBytes: 0 };
  const sample = async () => {
    peaks.nodeRssBytes = Math.max(peaks.nodeRssBytes, process.memoryUsage().rss);
    try {
      const info = parseInfo(await redis.info('memory'));
      peaks.redisRssBytes = Math.max(peaks.redisRssBytes, info.used_memory_rss ?? 0);
    } catch {
      // A sample lost to a busy Redis is only a sample; the next one reads it again.
    }
  };
  const timer = setInterval(sample, periodMs);
  return {
    peaks,
    async stop() {
      clearInterval(timer);
      await sample();
      return peaks;
    },
  };
}
