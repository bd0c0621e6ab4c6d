// An unbounded first-in, first-out queue with promise-based reads, like the
// asyncio.Queue the Python side reads its channel and its server events from.
//
// The one thing a plain promise cannot do is be given up without losing what it
// would have received.  get({ signal }) can: when the signal aborts first, the read is
// withdrawn, and an item that arrives later stays in the queue for the next reader
// (asyncio gets this from task cancellation; sfs relies on it while a user decides).

export class AsyncQueue {
  constructor() {
    this._items = [];
    this._head = 0; // index of the next item: shift() is O(n) on long queues
    this._waiters = [];
  }

  get size() {
    return this._items.length - this._head;
  }

  /** Add an item; the oldest waiting reader gets it at once. */
  put(item) {
    const waiter = this._waiters.shift();
    if (waiter !== undefined) {
      waiter.resolve(item);
      return;
    }
    this._items.push(item);
  }

  /** The next item if one is here, else undefined. */
  poll() {
    if (this._head >= this._items.length) return undefined;
    const item = this._items[this._head];
    this._items[this._head] = undefined;
    this._head += 1;
    if (this._head > 1024 && this._head * 2 > this._items.length) {
      this._items = this._items.slice(this._head);
      this._head = 0;
    }
    return item;
  }

  /** Put an item back at the front (a close marker that every reader must see). */
  unget(item) {
    if (this._head > 0) {
      this._head -= 1;
      this._items[this._head] = item;
    } else {
      this._items.unshift(item);
    }
  }

  /**
   * Wait for the next item.
   * @param {{signal?: AbortSignal}} [options]  abort to withdraw this read; the promise
   *   then rejects with the signal's reason and no item is taken
   */
  get({ signal } = {}) {
    if (this.size) return Promise.resolve(this.poll());
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this._waiters.push(waiter);
      if (signal) {
        const withdraw = () => {
          const index = this._waiters.indexOf(waiter);
          if (index >= 0) {
            this._waiters.splice(index, 1);
            reject(signal.reason);
          }
        };
        signal.addEventListener("abort", withdraw, { once: true });
        waiter.resolve = (item) => {
          signal.removeEventListener("abort", withdraw);
          resolve(item);
        };
      }
    });
  }
}

/** A promise that resolves after `ms`, or rejects with the signal's reason if aborted. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", stop);
      resolve();
    }, ms);
    const stop = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal?.addEventListener("abort", stop, { once: true });
  });
}
