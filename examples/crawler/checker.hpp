#pragma once

// The crawler's worker: fetches a page and says whether a text occurs in it.
// Written as plain single-threaded code; multiworker runs copies of it in
// worker processes.

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace crawler {

class Checker {
public:
    long timeout_seconds = 10;

    /// Called in each worker before its first task: one curl handle per
    /// worker, reused for every page it fetches (so connections are kept alive).
    void on_worker_start() {
        handle_.reset(curl_easy_init(), Cleanup{});
        if (!handle_) throw std::runtime_error{"curl_easy_init failed"};
        curl_easy_setopt(handle_.get(), CURLOPT_USERAGENT, "Mozilla/5.0 (multiworker crawler example)");
        curl_easy_setopt(handle_.get(), CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(handle_.get(), CURLOPT_TIMEOUT, timeout_seconds);
        curl_easy_setopt(handle_.get(), CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(handle_.get(), CURLOPT_WRITEFUNCTION, &Checker::append);
    }

    /// Returns the page's name (the last part of its URL) and whether `text`
    /// occurs in it, ignoring case. Throws on any failure to fetch it.
    std::pair<std::string, bool> check(const std::string& url, const std::string& text) {
        if (!handle_) on_worker_start();
        std::string page;
        curl_easy_setopt(handle_.get(), CURLOPT_URL, url.c_str());
        curl_easy_setopt(handle_.get(), CURLOPT_WRITEDATA, &page);
        if (const CURLcode code = curl_easy_perform(handle_.get()); code != CURLE_OK) {
            throw std::runtime_error{url + ": " + curl_easy_strerror(code)};
        }
        long status = 0;
        curl_easy_getinfo(handle_.get(), CURLINFO_RESPONSE_CODE, &status);
        if (status != 200) throw std::runtime_error{url + ": HTTP " + std::to_string(status)};
        return {url.substr(url.rfind('/') + 1), contains_ignoring_case(page, text)};
    }

private:
    static std::size_t append(char* data, std::size_t size, std::size_t count, void* page) {
        static_cast<std::string*>(page)->append(data, size * count);
        return size * count;
    }

    static bool contains_ignoring_case(const std::string& haystack, const std::string& needle) {
        const auto equal = [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        };
        return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(), equal) != haystack.end();
    }

    struct Cleanup {
        void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
    };
    std::shared_ptr<CURL> handle_{nullptr, Cleanup{}};
};

}  // namespace crawler
